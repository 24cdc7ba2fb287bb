//! The system as `table`/`wide` text: pod-hosts, statistics, replicas.

use comfy_table::Cell;
use ipa_proto::v1 as pb;

use crate::output::Ctx;
use crate::output::fmt::{self, colored};

/// `hosts list`.
pub fn host_list(hosts: &[pb::PodHostInfo], ctx: &Ctx) -> String {
    if hosts.is_empty() {
        return "No pod-hosts known.".to_owned();
    }
    let mut headers = vec!["HOST", "STATE", "PODS", "TEMPLATES", "LAST HEARTBEAT"];
    if ctx.wide {
        headers.extend(["ADDRESS", "BOOT", "REFUSED DUPLICATE AT"]);
    }
    let mut t = fmt::table(ctx, &headers);
    for h in hosts {
        // A second pod-host claiming this host id is refused; say so even
        // in the narrow table, it needs an operator.
        let state = if h.conflict_endpoint.is_empty() {
            fmt::host_state(h.state).to_owned()
        } else {
            format!("{} (duplicate id)", fmt::host_state(h.state))
        };
        let mut row = vec![
            Cell::new(&h.host_id),
            colored(ctx, &state, fmt::host_color(h.state)),
            Cell::new(format!("{}/{}", h.running_pods, h.capacity)),
            Cell::new(h.templates.join(",")),
            Cell::new(fmt::time(ctx, h.last_heartbeat_at.as_ref())),
        ];
        if ctx.wide {
            row.extend([
                Cell::new(&h.address),
                Cell::new(&h.boot_id),
                Cell::new(&h.conflict_endpoint),
            ]);
        }
        t.add_row(row);
    }
    fmt::render(&t)
}

/// `stats`: one row per group, then the queue and the running pods.
pub fn stats(s: &pb::GetStatsResponse, ctx: &Ctx) -> String {
    let mut headers = vec![
        "GROUP",
        "TASKS",
        "COMPLETED",
        "FAILED",
        "P50 TO COMPLETE",
        "P95 TO COMPLETE",
        "RESTARTS (MEAN/MAX)",
    ];
    if ctx.wide {
        headers.extend(["BY STATUS", "BY PHASE"]);
    }
    let mut t = fmt::table(ctx, &headers);
    for g in &s.groups {
        let done = g.time_to_complete.unwrap_or_default();
        let mut row = vec![
            Cell::new(if g.key.is_empty() { "(all)" } else { &g.key }),
            Cell::new(g.total),
            Cell::new(percent(g.completion_rate)),
            Cell::new(percent(g.failure_rate)),
            Cell::new(secs(done.p50_seconds)),
            Cell::new(secs(done.p95_seconds)),
            Cell::new(format!("{:.2}/{}", g.restarts_mean, g.restarts_max)),
        ];
        if ctx.wide {
            let by_status = g
                .status_counts
                .iter()
                .map(|c| format!("{}={}", fmt::status(c.status), c.count))
                .collect::<Vec<_>>()
                .join(" ");
            let by_phase = g
                .phase_counts
                .iter()
                .map(|c| format!("{}={}", fmt::phase(c.phase), c.count))
                .collect::<Vec<_>>()
                .join(" ");
            row.extend([Cell::new(by_status), Cell::new(by_phase)]);
        }
        t.add_row(row);
    }
    let queue = if s.queue_depth.is_empty() {
        "empty".to_owned()
    } else {
        s.queue_depth
            .iter()
            .map(|q| format!("{}={}", fmt::priority(q.priority), q.count))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{}\n\nQueued: {queue}\nRunning pods: {}",
        fmt::render(&t),
        s.running_pods
    )
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

fn secs(s: f64) -> String {
    if s <= 0.0 {
        "-".to_owned()
    } else if s < 120.0 {
        format!("{s:.1}s")
    } else {
        fmt::span(std::time::Duration::from_secs_f64(s))
    }
}

/// `cluster`.
pub fn cluster(c: &pb::GetClusterInfoResponse, ctx: &Ctx) -> String {
    let head = format!("Leader: {}  (epoch {})", c.leader_replica_id, c.epoch);
    if c.replicas.is_empty() {
        return head;
    }
    let mut t = fmt::table(ctx, &["REPLICA", "ROLE", "ADDRESS", "LAST SEEN"]);
    for r in &c.replicas {
        t.add_row(vec![
            Cell::new(&r.replica_id),
            colored(
                ctx,
                if r.leader { "leader" } else { "follower" },
                r.leader.then_some(comfy_table::Color::Green),
            ),
            Cell::new(&r.address),
            Cell::new(fmt::time(ctx, r.last_seen_at.as_ref())),
        ]);
    }
    format!("{head}\n\n{}", fmt::render(&t))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn ctx(wide: bool) -> Ctx {
        Ctx {
            wide,
            color: false,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
        }
    }

    #[test]
    fn hosts_show_load_and_state() {
        let h = pb::PodHostInfo {
            host_id: "host-a".into(),
            address: "http://10.0.0.1:50052".into(),
            state: pb::PodHostState::Unreachable as i32,
            capacity: 8,
            running_pods: 3,
            templates: vec!["default".into(), "agent".into()],
            last_heartbeat_at: None,
            boot_id: "b1".into(),
            conflict_endpoint: String::new(),
        };
        let s = host_list(std::slice::from_ref(&h), &ctx(false));
        assert!(s.contains("unreachable") && s.contains("3/8") && s.contains("default,agent"));
        assert!(!s.contains("10.0.0.1") && !s.contains("duplicate"));
        assert!(host_list(std::slice::from_ref(&h), &ctx(true)).contains("http://10.0.0.1:50052"));
        let dup = pb::PodHostInfo {
            conflict_endpoint: "http://10.0.0.9:50052".into(),
            ..h
        };
        assert!(host_list(std::slice::from_ref(&dup), &ctx(false)).contains("(duplicate id)"));
        assert!(host_list(&[dup], &ctx(true)).contains("http://10.0.0.9:50052"));
    }

    #[test]
    fn stats_show_rates_percentiles_and_queue() {
        let s = pb::GetStatsResponse {
            groups: vec![pb::StatsGroup {
                key: "".into(),
                total: 10,
                completion_rate: 0.8,
                failure_rate: 0.1,
                time_to_complete: Some(pb::DurationPercentiles {
                    p50_seconds: 42.0,
                    p95_seconds: 7200.0,
                }),
                restarts_mean: 0.5,
                restarts_max: 3,
                status_counts: vec![pb::StatusCount {
                    status: pb::TaskStatus::Completed as i32,
                    count: 8,
                }],
                ..Default::default()
            }],
            queue_depth: vec![pb::QueueDepth {
                priority: pb::Priority::High as i32,
                count: 2,
            }],
            running_pods: 4,
        };
        let text = stats(&s, &ctx(false));
        for want in [
            "(all)",
            "80.0%",
            "10.0%",
            "42.0s",
            "2h",
            "0.50/3",
            "high=2",
            "Running pods: 4",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        assert!(stats(&s, &ctx(true)).contains("completed=8"));
    }

    #[test]
    fn cluster_names_the_leader() {
        let c = pb::GetClusterInfoResponse {
            leader_replica_id: "cm-0".into(),
            epoch: 7,
            replicas: vec![
                pb::Replica {
                    replica_id: "cm-0".into(),
                    leader: true,
                    ..Default::default()
                },
                pb::Replica {
                    replica_id: "cm-1".into(),
                    ..Default::default()
                },
            ],
        };
        let s = cluster(&c, &ctx(false));
        assert!(s.starts_with("Leader: cm-0  (epoch 7)"));
        assert!(s.contains("leader") && s.contains("follower"));
    }
}
