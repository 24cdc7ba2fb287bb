//! The scale rows of the benchmark table (figures of the largest simulated
//! configuration, checked against the goals of issue 18) and the growth
//! tables (every configuration, and real against simulated pod-hosts).

use std::fmt::Write as _;
use std::time::Duration;

use super::fleet::Kind;
use super::{ConfigResult, ScaleSpec};
use crate::report::{METRICS, Row, ratio};
use crate::stats::{Samples, ms, p50_p99};

const S: Duration = Duration::from_secs(1);

/// Index of the first scale row in [`METRICS`].
fn m(i: usize) -> &'static str {
    let first = METRICS
        .iter()
        .position(|m| m.starts_with("Scale:"))
        .unwrap_or(0);
    METRICS[first + i]
}

fn pct(share: f64) -> String {
    format!("{:.2} %", share * 100.0)
}

/// `p50 X / max Y (n=N)`.
fn p50_max(s: &Samples) -> String {
    format!("p50 {} / max {} (n={})", ms(s.p50()), ms(s.max()), s.len())
}

fn size(c: &ConfigResult) -> String {
    format!("{} hosts / {} pods", c.config.hosts, c.config.pods)
}

/// The largest configuration of `kind`.
fn largest(results: &[ConfigResult], kind: Kind) -> Option<&ConfigResult> {
    results
        .iter()
        .filter(|r| r.config.kind == kind)
        .max_by_key(|r| (r.config.pods, r.config.hosts))
}

/// The real configuration and the simulated one of the same size.
fn pair(results: &[ConfigResult]) -> Option<(&ConfigResult, &ConfigResult)> {
    let real = largest(results, Kind::Real)?;
    let sim = results.iter().find(|r| {
        r.config.kind == Kind::Simulated
            && (r.config.hosts, r.config.pods) == (real.config.hosts, real.config.pods)
    })?;
    Some((real, sim))
}

/// The goal of a full run is stated for 100 hosts / 10,000 pods; a smaller
/// run says so.
fn reduced(c: &ConfigResult) -> &'static str {
    if c.config.hosts >= 100 && c.config.pods >= 10_000 {
        ""
    } else {
        " (reduced size in this mode)"
    }
}

pub fn rows(results: &[ConfigResult]) -> Vec<Row> {
    let Some(c) = largest(results, Kind::Simulated) else {
        return (0..9)
            .map(|i| Row::new(m(i), "—", "—").measured("not measured"))
            .collect();
    };
    let (hosts, pods) = (c.config.hosts, c.config.pods);
    let mut rows = Vec::new();
    let share = c.rest.cpu_share();
    rows.push(
        Row::new(m(0), "—", "≤ 1 % of one CPU for 100 hosts")
            .measured(format!(
                "{} of one CPU with {}{} ({:.0} µs/s per host) over {:.0} s; the simulated hosts' own: {}",
                pct(share),
                size(c),
                reduced(c),
                share * 1e6 / hosts as f64,
                c.rest.window.as_secs_f64(),
                pct(c.rest.fleet_cpu.as_secs_f64() / c.rest.window.as_secs_f64().max(1e-9)),
            ))
            .met(share <= 0.01 * hosts as f64 / 100.0),
    );
    let kib = c.rest.kib_per_pod(pods);
    rows.push(
        Row::new(m(1), "—", "≤ 2 KiB per pod")
            .measured(format!(
                "{kib:.2} KiB/pod (RSS {:.1} MiB with {}, {:.1} MiB with the hosts and no task)",
                c.rest.rss_kib as f64 / 1024.0,
                size(c),
                c.rest.rss_base_kib as f64 / 1024.0
            ))
            .met(kib <= 2.0),
    );
    let r = &c.restart;
    let clean = r.missing == 0 && r.changed == 0 && r.killed == 0;
    rows.push(
        Row::new(m(2), "—", "≤ 5 s, no pod killed")
            .measured(format!(
                "pods re-adopted {}; hosts READY {}; listening after {}; {} killed, {} replaced, {} missing{}",
                p50_max(&r.readopted),
                p50_max(&r.hosts_ready),
                ms(r.boot),
                r.killed,
                r.changed,
                r.missing,
                reduced(c)
            ))
            .baseline(format!(
                "resolution: a ListTasks sweep every {} ({} sweeps)",
                ms(r.poll_every),
                r.polls
            ))
            .met(clean && r.readopted.max() <= 5 * S),
    );
    let s = &c.crash;
    rows.push(
        Row::new(m(3), "—", "≤ 2 s to the last restart")
            .measured(format!(
                "{} pods crashed within {}: last `pod_crashed` at {}, last restart at {} (p50 {}), {} missing{}",
                s.pods,
                ms(s.spread),
                ms(s.committed.max()),
                ms(s.restarted.max()),
                ms(s.restarted.p50()),
                s.missing,
                reduced(c)
            ))
            .baseline(format!(
                "central CPU {:.0} µs per crash + restart",
                s.cpu.as_secs_f64() * 1e6 / s.pods.max(1) as f64
            ))
            .met(s.missing == 0 && s.pods > 0 && s.restarted.max() <= 2 * S),
    );
    let h = &c.host_storm;
    rows.push(
        Row::new(m(4), "—", "≤ 2 s after the fence deadline")
            .measured(format!(
                "{} hosts with {} pods SIGKILLed: `pod_lost` {} after the deadline, last restart {} after it (p50 {}); {} early, {} missing{}",
                h.hosts,
                h.pods,
                p50_max(&h.lost),
                ms(h.restarted.max()),
                ms(h.restarted.p50()),
                h.early,
                h.missing,
                reduced(c)
            ))
            .met(h.missing == 0 && h.early == 0 && h.pods > 0 && h.restarted.max() <= 2 * S),
    );
    rows.push(
        Row::new(m(5), "—", "p50 ≤ 20 ms")
            .measured(format!(
                "{} listing {} pods{}",
                p50_p99(&c.list_active),
                c.listed,
                reduced(c)
            ))
            .met(c.list_active.len() > 0 && c.list_active.p50() <= Duration::from_millis(20)),
    );
    rows.push(
        Row::new(m(6), "—", "shown")
            .measured(format!("{} listing {hosts} hosts", p50_p99(&c.list_hosts))),
    );
    rows.push(match &c.watched {
        Some((storm, w)) => Row::new(m(7), "—", "every watcher sees every event")
            .measured(format!(
                "{} watchers × {} events: {} disagree; lag {}, max {}; the storm's last restart at {} (without watchers {})",
                w.watchers,
                w.events,
                w.disagree,
                p50_p99(&w.lag),
                ms(w.lag.max()),
                ms(storm.restarted.max()),
                ms(c.crash.restarted.max())
            ))
            .met(w.disagree == 0 && w.events > 0 && storm.missing == 0),
        None => Row::new(m(7), "—", "every watcher sees every event"),
    });
    rows.push(match pair(results) {
        Some((real, sim)) => Row::new(m(8), "—", "central's figures alike")
            .measured(format!(
                "{}: at rest {} vs {} of one CPU; {:.2} vs {:.2} KiB/pod; re-adopted by {} vs {}; crash storm restarted by {} vs {}; host storm by {} vs {} after the deadline (real vs simulated)",
                size(real),
                pct(real.rest.cpu_share()),
                pct(sim.rest.cpu_share()),
                real.rest.kib_per_pod(real.config.pods),
                sim.rest.kib_per_pod(sim.config.pods),
                ms(real.restart.readopted.max()),
                ms(sim.restart.readopted.max()),
                ms(real.crash.restarted.max()),
                ms(sim.crash.restarted.max()),
                ms(real.host_storm.restarted.max()),
                ms(sim.host_storm.restarted.max()),
            ))
            .baseline("simulated pod-hosts, same size, same run")
            .ratio(format!(
                "crash storm real/sim: {}",
                ratio(
                    real.crash.restarted.max().as_secs_f64(),
                    sim.crash.restarted.max().as_secs_f64()
                )
            )),
        None => Row::new(m(8), "—", "central's figures alike"),
    });
    rows
}

/// The growth tables for BENCHMARKS.md.
pub fn tables(results: &[ConfigResult], spec: &ScaleSpec) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "## Scale: growth with hosts and pods\n");
    let timings = match spec.timings.flags {
        None => "central's and the pod-hosts' default timings (heartbeat 500 ms, unreachable 1.5 s, fence 5 s)".to_owned(),
        Some((hb, un, fe)) => format!("heartbeat {hb} ms, unreachable {un} ms, fence {fe} ms (shortened for this mode)"),
    };
    let _ = writeln!(
        t,
        "One real central-manager per row, {timings}; at rest over {:.0} s. \
         \"sim\" rows use simulated pod-hosts (stand-in processes), \"real\" rows real \
         pod-host processes with real pods. Times of storms and restarts: p50 / max over pods.\n",
        spec.rest.as_secs_f64()
    );
    let _ = writeln!(
        t,
        "| hosts | pods | kind | StartPod rate | CPU at rest (of one CPU) | per host | RSS | RSS growth per pod | ListActivePods p50 / p99 | ListPodHosts p50 / p99 |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let share = r.rest.cpu_share();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0}/s | {} | {:.0} µs/s | {:.1} MiB | {:.2} KiB | {} / {} | {} / {} |",
            r.config.hosts,
            r.config.pods,
            kind(r),
            r.start_rate,
            pct(share),
            share * 1e6 / r.config.hosts as f64,
            r.rest.rss_kib as f64 / 1024.0,
            r.rest.kib_per_pod(r.config.pods),
            ms(r.list_active.p50()),
            ms(r.list_active.p99()),
            ms(r.list_hosts.p50()),
            ms(r.list_hosts.p99()),
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| hosts | pods | kind | restart: hosts READY | pods re-adopted | crash storm: pods | `pod_crashed` | restarted | with 100 watchers: restarted | watch lag p99 | host storm: hosts / pods | `pod_lost` after deadline | restarted after deadline |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let (watched, lag) = match &r.watched {
            Some((s, w)) => (pm(&s.restarted), ms(w.lag.p99())),
            None => ("—".into(), "—".into()),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
            r.config.hosts,
            r.config.pods,
            kind(r),
            pm(&r.restart.hosts_ready),
            pm(&r.restart.readopted),
            r.crash.pods,
            pm(&r.crash.committed),
            pm(&r.crash.restarted),
            watched,
            lag,
            r.host_storm.hosts,
            r.host_storm.pods,
            pm(&r.host_storm.lost),
            pm(&r.host_storm.restarted),
        );
    }
    let incomplete: Vec<String> = results
        .iter()
        .filter(|r| {
            r.restart.missing + r.crash.missing + r.host_storm.missing > 0
                || r.restart.killed > 0
                || r.restart.changed > 0
                || r.start_errors > 0
                || r.rest.running < r.config.pods
        })
        .map(|r| {
            format!(
                "{} {}: {} start errors, {} of {} pods running at rest; restart {} missing, {} replaced, {} killed; crash storm {} missing; host storm {} missing",
                size(r),
                kind(r),
                r.start_errors,
                r.rest.running,
                r.config.pods,
                r.restart.missing,
                r.restart.changed,
                r.restart.killed,
                r.crash.missing,
                r.host_storm.missing
            )
        })
        .collect();
    if !incomplete.is_empty() {
        let _ = writeln!(t, "\nIncomplete: {}.", incomplete.join("; "));
    }
    t
}

fn kind(r: &ConfigResult) -> &'static str {
    match r.config.kind {
        Kind::Simulated => "sim",
        Kind::Real => "real",
    }
}

/// `p50 / max`.
fn pm(s: &Samples) -> String {
    if s.len() == 0 {
        return "—".into();
    }
    format!("{} / {}", ms(s.p50()), ms(s.max()))
}
