//! Turning the measurements into the table rows (goal checks, baselines,
//! ratios), the run details, and the whole `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Scale;
use crate::api::ApiResults;
use crate::baseline::{ProcessFloor, ReadFloor, SqlFloor};
use crate::fleet::{FleetResults, STOP_GRACE};
use crate::pods::PodResults;
use crate::report::{self, METRICS, Row, ratio};
use crate::stats::{Samples, ms, p50_p99};

/// The prose sections (method, baselines, peer, anchors, limits), then
/// the scale phase's (a file of its own: one file had passed 600 lines).
const NOTES: &str = include_str!("notes.md");
const NOTES_SCALE: &str = include_str!("notes-scale.md");

pub enum Peer {
    Skipped,
    NotInstalled,
    Measured { version: String, samples: Samples },
}

pub struct All<'a> {
    pub scale: &'a Scale,
    pub secure: &'a crate::secure::SecureResults,
    pub pf: &'a ProcessFloor,
    pub sf: &'a SqlFloor,
    pub rf: &'a ReadFloor,
    pub api: &'a ApiResults,
    pub pods: &'a PodResults,
    pub frozen: &'a Samples,
    pub fleet: &'a FleetResults,
    pub ours: &'a Samples,
    pub sup: &'a Peer,
    pub retention: &'a crate::retention::RetentionResults,
    pub queue: &'a crate::queue::QueueResults,
    pub postgres: &'a crate::postgres::PgResults,
    pub failover: &'a crate::failover::FailoverResults,
    pub scale_results: &'a [crate::scale::ConfigResult],
}

const MS: Duration = Duration::from_millis(1);

fn f(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{:.0}/s", r)
    } else {
        format!("{r:.1}/s")
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn build(a: &All) -> Vec<Row> {
    let m = |i: usize| METRICS[i];
    let api = a.api;
    let mut rows = Vec::new();

    let c1 = &api.create_1;
    rows.push(
        Row::new(m(0), "< 50 ms", "p50 ≤ 2 ms")
            .measured(p50_p99(c1))
            .baseline(format!(
                "1 SQLite commit/write in-process: p50 {}",
                ms(a.sf.per_commit.p50())
            ))
            .ratio(ratio(f(c1.p50()), f(a.sf.per_commit.p50())))
            .met(c1.p50() <= 2 * MS),
    );

    let c64 = &api.create_64;
    let commits = api
        .create_64_batches
        .map(|b| format!(", {b} commits for {} creates", c64.ok))
        .unwrap_or_default();
    rows.push(
        Row::new(m(1), "—", "≥ 10,000/s, p99 ≤ 20 ms")
            .measured(format!(
                "{}, {}{commits}, {} errors",
                rate(c64.rate()),
                p50_p99(&c64.samples),
                c64.errors
            ))
            .baseline(format!("1 txn/write: {}", rate(a.sf.per_commit_rate)))
            .ratio(ratio(c64.rate(), a.sf.per_commit_rate))
            .met(c64.rate() >= 10_000.0 && c64.samples.p99() <= 20 * MS && c64.errors == 0),
    );

    rows.push(
        Row::new(m(2), "—", "shown for comparison")
            .measured(format!(
                "{}, {} (in-process, no gRPC)",
                rate(a.sf.per_commit_rate),
                p50_p99(&a.sf.per_commit)
            ))
            .baseline(format!(
                "batched 256/txn in-process: {}",
                rate(a.sf.batched_rate)
            ))
            .ratio(ratio(a.sf.per_commit_rate, a.sf.batched_rate)),
    );

    let g1 = &api.get_1;
    rows.push(
        Row::new(m(3), "< 10 ms", "p99 ≤ 1 ms")
            .measured(p50_p99(g1))
            .baseline(format!("same SQL in-process: p50 {}", ms(a.rf.get.p50())))
            .ratio(ratio(f(g1.p50()), f(a.rf.get.p50())))
            .met(g1.p99() <= MS),
    );

    let g16 = &api.get_16;
    let floor_rate = 1.0 / f(a.rf.get.p50()).max(1e-9);
    rows.push(
        Row::new(m(4), "—", "≥ 20,000/s")
            .measured(format!(
                "{}, {}, {} errors",
                rate(g16.rate()),
                p50_p99(&g16.samples),
                g16.errors
            ))
            .baseline(format!("1 in-process reader: {}", rate(floor_rate)))
            .ratio(ratio(g16.rate(), floor_rate))
            .met(g16.rate() >= 20_000.0 && g16.errors == 0),
    );

    for (i, s, floor, spec, goal, lim) in [
        (5, &api.list100, &a.rf.list100, "< 100 ms", "p50 ≤ 3 ms", 3),
        (
            6,
            &api.list1000,
            &a.rf.list1000,
            "< 500 ms",
            "p50 ≤ 20 ms",
            20,
        ),
    ] {
        rows.push(
            Row::new(m(i), spec, goal)
                .measured(format!("{} over {} tasks", p50_p99(s), api.table_size))
                .baseline(format!("same SQL in-process: p50 {}", ms(floor.p50())))
                .ratio(ratio(f(s.p50()), f(floor.p50())))
                .met(s.p50() <= lim * MS && (api.table_size >= 100_000 || a.scale.quick)),
        );
    }

    let p = a.pods;
    let spawn = &a.pf.spawn_reap;
    rows.push(
        Row::new(m(7), "< 100 ms", "p50 ≤ 5 ms, p99 ≤ 20 ms")
            .measured(p50_p99(&p.start_1))
            .baseline(format!("spawn+reap /bin/true: p50 {}", ms(spawn.p50())))
            .ratio(ratio(f(p.start_1.p50()), f(spawn.p50())))
            .met(p.start_1.p50() <= 5 * MS && p.start_1.p99() <= 20 * MS),
    );
    let spawn_rate = 1.0 / f(spawn.p50()).max(1e-9);
    rows.push(
        Row::new(m(8), "—", "≥ 500 starts/s")
            .measured(format!(
                "{}, {}, {} errors",
                rate(p.start_32.rate()),
                p50_p99(&p.start_32.samples),
                p.start_32.errors
            ))
            .baseline(format!("spawn+reap sequential: {}", rate(spawn_rate)))
            .ratio(ratio(p.start_32.rate(), spawn_rate))
            .met(p.start_32.rate() >= 500.0 && p.start_32.errors == 0),
    );

    let kr = &a.pf.kill_reap;
    let note = p
        .crash_note
        .as_ref()
        .map(|n| format!(" (stopped early: {n})"))
        .unwrap_or_default();
    rows.push(
        Row::new(m(9), "—", "p99 ≤ 50 ms")
            .measured(format!("{}{note}", p50_p99(&p.crash_detect)))
            .baseline(format!("kill→wait in-process: p50 {}", ms(kr.p50())))
            .ratio(ratio(f(p.crash_detect.p50()), f(kr.p50())))
            .met(p.crash_detect.len() > 0 && p.crash_detect.p99() <= 50 * MS),
    );
    let floor = kr.p50() + spawn.p50();
    rows.push(
        Row::new(m(10), "—", "p50 ≤ 20 ms")
            .measured(p50_p99(&p.crash_restart))
            .baseline(format!("kill→wait + spawn+reap: p50 {}", ms(floor)))
            .ratio(ratio(f(p.crash_restart.p50()), f(floor)))
            .met(p.crash_restart.len() > 0 && p.crash_restart.p50() <= 20 * MS),
    );

    rows.push(
        Row::new(m(11), "—", "≤ 1.5 s p99 with defaults")
            .measured(format!("{}, max {}", p50_p99(a.frozen), ms(a.frozen.max())))
            .baseline("Kubernetes node lost: 50 s (on paper)")
            .ratio(ratio(f(a.frozen.p99()), 50.0))
            .met(a.frozen.len() > 0 && a.frozen.p99() <= Duration::from_millis(1500)),
    );

    let fl = a.fleet;
    let full = fl.wanted >= 2000;
    let mut pods_row = Row::new(m(12), "—", "2,000 running across 4 pod-hosts").measured(format!(
        "{} of {} running{}; started at {} ({} errors)",
        fl.running,
        fl.wanted,
        if full {
            ""
        } else {
            " (reduced count in this mode)"
        },
        rate(fl.start_rate),
        fl.start_errors
    ));
    if full {
        pods_row = pods_row.met(fl.running >= 2000);
    }
    rows.push(pods_row);
    rows.push(
        Row::new(m(13), "—", "≤ 50 KiB")
            .measured(format!(
                "{:.1} KiB/pod (pod-host RSS growth ÷ pods, mean of 4 hosts)",
                fl.kib_per_pod
            ))
            .met(fl.kib_per_pod <= 50.0),
    );
    let budget = STOP_GRACE + Duration::from_secs(1);
    rows.push(
        Row::new(m(14), "—", "≤ stop-grace + 1 s")
            .measured(format!(
                "{} for {} pods ignoring SIGTERM; {} left alive",
                ms(fl.stop_took),
                fl.stopped_pods,
                fl.leftovers
            ))
            .baseline(format!("stop-grace {}", ms(STOP_GRACE)))
            .ratio(ratio(f(fl.stop_took), f(STOP_GRACE)))
            .met(fl.stop_took <= budget && fl.leftovers == 0 && (fl.stopped_pods >= 500 || !full)),
    );

    let peer_row =
        Row::new(m(15), "—", "print the ratio").measured(format!("ours: {}", p50_p99(a.ours)));
    rows.push(match a.sup {
        Peer::Skipped => peer_row.baseline("supervisord: skipped (--no-peer)"),
        Peer::NotInstalled => peer_row.baseline("supervisord: not installed"),
        Peer::Measured { version, samples } => peer_row
            .baseline(format!("supervisord {version}: {}", p50_p99(samples)))
            .ratio(format!(
                "supervisord/ours p50: {}",
                ratio(f(samples.p50()), f(a.ours.p50()))
            )),
    });

    // Security's cost: server CPU per call, TLS + token against plaintext
    // measured the same way in the same phase.
    let (p, s) = (&a.secure.plain, &a.secure.secure);
    let us = |d: Duration| format!("{:.0} µs", f(d) * 1e6);
    let cpu_row =
        |i: usize, secure_cpu: Duration, plain_cpu: Duration, who: &str, latency: String| {
            let r = f(secure_cpu) / f(plain_cpu).max(1e-9);
            Row::new(m(i), "—", "≤ 15 % more CPU/call than plaintext")
                .measured(format!("{who} CPU {}/call; {latency}", us(secure_cpu)))
                .baseline(format!("plaintext, same phase: {}/call", us(plain_cpu)))
                .ratio(ratio(f(secure_cpu), f(plain_cpu)))
                .met(r <= 1.15)
        };
    rows.push(cpu_row(
        16,
        s.create_1_cpu,
        p.create_1_cpu,
        "central",
        format!(
            "{} (plaintext p50 {})",
            p50_p99(&s.create_1),
            ms(p.create_1.p50())
        ),
    ));
    rows.push(cpu_row(
        17,
        s.create_64_cpu,
        p.create_64_cpu,
        "central",
        format!(
            "{} (plaintext {}), {} errors",
            rate(s.create_64.rate()),
            rate(p.create_64.rate()),
            s.create_64.errors
        ),
    ));
    rows.push(cpu_row(
        18,
        s.start_1_cpu,
        p.start_1_cpu,
        "central + pod-host",
        format!(
            "{} (plaintext p50 {})",
            p50_p99(&s.start_1),
            ms(p.start_1.p50())
        ),
    ));
    rows.extend(crate::retention::rows(a.retention));
    rows.extend(crate::scale::report::rows(a.scale_results));
    rows.extend(crate::queue::rows(a.queue));
    rows.extend(crate::postgres::rows(a.postgres));
    rows.extend(crate::failover::rows(a.failover));
    rows
}

/// Extra figures of this run that do not fit in the table.
pub fn details(a: &All) -> String {
    let mut d = String::new();
    let _ = writeln!(d, "Run details:");
    let _ = writeln!(
        d,
        "- Process floor: spawn+reap `/bin/true` {}; SIGKILL→`wait` {}.",
        p50_p99(&a.pf.spawn_reap),
        p50_p99(&a.pf.kill_reap)
    );
    let _ = writeln!(
        d,
        "- SQLite floor (WAL, synchronous=FULL, the real schema, 3 rows per write): 1 txn/write {} ({}); 256 writes/txn {}.",
        p50_p99(&a.sf.per_commit),
        rate(a.sf.per_commit_rate),
        rate(a.sf.batched_rate)
    );
    let _ = writeln!(
        d,
        "- StartPod stages: the whole RPC at 1 client {}; the pod-host's own StartPod called directly (pod dir + task file, pipes, spawn; no central, no database) {}.",
        p50_p99(&a.pods.start_1),
        p50_p99(&a.pods.host_only)
    );
    let _ = writeln!(
        d,
        "- In-process reads on central's database: GetTask SQL {}; ListTasks SQL limit 100 {}; limit 1000 {}.",
        p50_p99(&a.rf.get),
        p50_p99(&a.rf.list100),
        p50_p99(&a.rf.list1000)
    );
    if let Some(b) = a.api.create_64_batches {
        let _ = writeln!(
            d,
            "- Group commit at 64 clients: {} creates in {b} transactions ({:.1} per commit).",
            a.api.create_64.ok,
            a.api.create_64.ok as f64 / b.max(1) as f64
        );
    }
    let cpu = |label: &str, (server, client): (Duration, Duration), who: &str| {
        let per = f(server + client);
        format!(
            "- CPU per call, {label}: {who} {:.0} µs + benchmark client {:.0} µs = {:.0} µs, so {} CPUs saturate at ≈{}.\n",
            f(server) * 1e6,
            f(client) * 1e6,
            per * 1e6,
            cpus(),
            rate(cpus() as f64 / per.max(1e-9))
        )
    };
    d.push_str(&cpu(
        "CreateTask at 64 clients",
        a.api.create_64_cpu,
        "central-manager",
    ));
    d.push_str(&cpu(
        "GetTask at 16 clients",
        a.api.get_16_cpu,
        "central-manager",
    ));
    d.push_str(&cpu(
        "StartPod at 32 clients",
        a.pods.start_32_cpu,
        "central-manager + pod-hosts (not counting the pods themselves)",
    ));
    let _ = writeln!(
        d,
        "- Crash loop of the same program (exit 1 after 100 ms), gap exit→next start: ours {}.",
        p50_p99(a.ours)
    );
    if let Peer::Measured { version, samples } = a.sup {
        let _ = writeln!(
            d,
            "- supervisord {version} (autorestart=true, startsecs=0): {}.",
            p50_p99(samples)
        );
    }
    let missed: Vec<&str> = build(a)
        .iter()
        .filter(|r| r.met == Some(false))
        .map(|r| {
            METRICS
                .iter()
                .copied()
                .find(|m| *m == r.metric)
                .unwrap_or("?")
        })
        .collect();
    if missed.is_empty() {
        let _ = writeln!(d, "- Goals missed in this run: none.");
    } else {
        let _ = writeln!(d, "- Goals missed in this run: {}.", missed.join("; "));
    }
    let _ = writeln!(d);
    d.push_str(&crate::scale::report::tables(
        a.scale_results,
        &a.scale.scale,
    ));
    d
}

pub fn markdown(command: &str, elapsed: Duration, table: &str, details: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `tests/src/bin/bench` (do not edit the figures by hand; \
         the prose after the table lives in `tests/src/bin/bench/notes.md`).\n"
    );
    let _ = writeln!(md, "- Machine: {}", report::machine());
    let _ = writeln!(md, "- Date: {}", report::date());
    let _ = writeln!(
        md,
        "- Command: `{command}` ({:.0} s)",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "- To reproduce: `apt-get install -y supervisor postgresql` (the peer, optional; \
         PostgreSQL's server and pgbench, for the PostgreSQL rows), then\n  \
         `cargo build --release --workspace --bins && target/release/bench` \
         (`--quick` for smaller counts, same table).\n"
    );
    let _ = writeln!(md, "## Results\n");
    md.push_str(table);
    md.push('\n');
    md.push_str(details);
    md.push('\n');
    md.push_str(NOTES);
    md.push_str(NOTES_SCALE);
    md
}
