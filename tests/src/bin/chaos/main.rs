//! `chaos`: a randomized fault run against the real system. It starts
//! central-manager and three pod-hosts on loopback (central's database on a
//! small tmpfs of its own when run as root), drives them with clients that
//! create, start, stop, restart, complete and cancel tasks whose pods are
//! `ledger-pod`s (they record every run), and injects faults drawn from one
//! seed: SIGKILL and SIGSTOP of pods, pod-hosts and central, partitions
//! between central and a pod-host, the database's filesystem filling up and
//! draining, watchers that stop reading. When the faults stop it lets the
//! system converge, checks the invariants (see `checks`), prints a table
//! and exits 0 only if every invariant held.
//!
//! ```text
//! scripts/chaos --seconds 60 --seed 7      # or target/debug/chaos …
//! ```
//! Flags: `--seconds N` (of faults, default 60), `--seed S` (default: from
//! the clock, printed), `--hosts N` (3), `--workers N` (4), `--out PATH`
//! (also write the table there). A failing seed replays the same fault
//! schedule.

mod auditor;
mod checks;
mod faults;
mod report;
mod system;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use checks::{Verdict, fd_count, live_pods};
use system::{System, Timing};

/// How long the system may take to settle once faults stop: the fence
/// deadline, a restart's backoff and the slowest pod's own exit, with room
/// for a loaded machine.
const CONVERGE_BOUND: Duration = Duration::from_secs(60);

struct Options {
    seconds: u64,
    seed: u64,
    hosts: usize,
    workers: usize,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        seconds: 60,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        hosts: 3,
        workers: 4,
        out: None,
    };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, flag: &str| -> Result<u64, String> {
        v.and_then(|s| s.parse().ok())
            .ok_or(format!("{flag} needs a non-negative integer"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => o.seconds = num(args.next(), "--seconds")?.max(1),
            "--seed" => o.seed = num(args.next(), "--seed")?,
            "--hosts" => o.hosts = num(args.next(), "--hosts")?.clamp(2, 16) as usize,
            "--workers" => o.workers = num(args.next(), "--workers")?.clamp(1, 64) as usize,
            "--out" => o.out = Some(args.next().ok_or("--out needs a path")?.into()),
            "-h" | "--help" => {
                return Err(
                    "chaos [--seconds N] [--seed S] [--hosts N] [--workers N] [--out PATH]".into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (text, passed) = rt.block_on(run(&opts));
    println!("{text}");
    if let Some(out) = &opts.out
        && let Err(e) = std::fs::write(out, &text)
    {
        eprintln!("writing {}: {e}", out.display());
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(o: &Options) -> (String, bool) {
    eprintln!("chaos: seed {} for {} s", o.seed, o.seconds);
    let root = tempfile::Builder::new()
        .prefix("ipa-chaos-")
        .tempdir()
        .expect("tempdir");
    let timing = Timing::default();
    let sys = System::start(root.path(), o.hosts, timing).await;
    let tmpfs = sys.tmpfs;
    let central_fds0 = sys.central_pid().map_or(0, fd_count);
    let host_fds0: Vec<usize> = sys
        .hosts
        .iter()
        .map(|h| h.proc.as_ref().map_or(0, |p| fd_count(p.pid)))
        .collect();
    let client = sys.client();
    let sys = Arc::new(tokio::sync::Mutex::new(sys));

    let acks = Arc::new(Mutex::new(workload::Acks::default()));
    let seen = Arc::new(Mutex::new(auditor::Seen::default()));
    let stop_work = CancellationToken::new();
    let stop_audit = CancellationToken::new();
    let work = tokio::spawn(workload::run(
        client.clone(),
        o.seed,
        o.workers,
        acks.clone(),
        stop_work.clone(),
    ));
    let audit = tokio::spawn(auditor::run(
        client.clone(),
        seen.clone(),
        stop_audit.clone(),
    ));

    let plan = faults::schedule(
        o.seed,
        Duration::from_secs(o.seconds),
        o.hosts,
        timing.fence_ms,
    );
    let tally = faults::inject(sys.clone(), plan, o.seed, CancellationToken::new()).await;
    stop_work.cancel();
    let _ = work.await;
    eprintln!("chaos: faults over; waiting for the system to converge");

    let mut sys = Arc::try_unwrap(sys)
        .unwrap_or_else(|_| panic!("fault tasks still hold the system"))
        .into_inner();
    // Every fault reverts itself; make sure nothing is left down.
    sys.restart_central().await;
    for i in 0..sys.hosts.len() {
        sys.restart_host(i).await;
    }
    let mut c = client.clone();
    let (converged, converged_in) = checks::converge(&sys, &mut c, CONVERGE_BOUND).await;
    let mut verdicts = vec![converged];
    // The workload has stopped: take the acknowledgements out of the lock.
    let acks = std::mem::take(&mut *acks.lock().unwrap_or_else(|e| e.into_inner()));
    let history = checks::history(&sys, &mut c, &acks).await;
    verdicts.extend(history.verdicts);

    // The watcher must catch up with every committed event.
    let max = history.positions.last().copied().unwrap_or(0);
    let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
        while seen.lock().unwrap().last < max {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    stop_audit.cancel();
    let _ = audit.await;
    verdicts.push(watch_verdict(
        &seen.lock().unwrap(),
        &history.positions,
        caught_up,
    ));

    // Descriptors: what a run leaves open beyond a fresh process's own, with
    // room for live pods (pipes, pidfd, log file) and connections.
    let mut bad = Vec::new();
    if let Some(pid) = sys.central_pid() {
        let n = fd_count(pid);
        if n > central_fds0 + 64 {
            bad.push(format!("central has {n} fds (fresh: {central_fds0})"));
        }
    }
    let live = live_pods(&sys.ledger).len();
    for (i, h) in sys.hosts.iter().enumerate() {
        if let Some(p) = &h.proc {
            let n = fd_count(p.pid);
            let allowed = host_fds0[i] + 8 * live + 32;
            if n > allowed {
                bad.push(format!(
                    "{} has {n} fds (fresh: {}, {live} pods in all)",
                    h.id, host_fds0[i]
                ));
            }
        }
    }
    sys.shutdown().await;
    let gone = tokio::time::timeout(Duration::from_secs(15), async {
        while !live_pods(&sys.ledger).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    if !gone {
        bad.push(format!(
            "pods still alive after every server stopped: {:?}",
            live_pods(&sys.ledger)
        ));
    }
    verdicts.push(Verdict {
        name: "no process or fd leaked",
        held: bad.is_empty(),
        detail: if bad.is_empty() {
            "fds within bounds; no pod outlived its pod-host".into()
        } else {
            bad.join("; ")
        },
    });

    let report = report::Report {
        seed: o.seed,
        seconds: o.seconds,
        tmpfs,
        tally: &tally,
        acks: &acks,
        verdicts: &verdicts,
        converged_in,
        events: history.positions.len(),
    };
    let passed = report.passed();
    let text = report.render();
    if !passed {
        let kept = sys.keep_database();
        eprintln!("chaos: database copied to {}", kept.display());
    }
    drop(sys);
    if !passed {
        let kept = root.keep();
        eprintln!("chaos: run dir kept for inspection: {}", kept.display());
    }
    (text, passed)
}

fn watch_verdict(
    seen: &auditor::Seen,
    committed: &std::collections::BTreeSet<u64>,
    caught_up: bool,
) -> Verdict {
    let mut bad = Vec::new();
    if !caught_up {
        bad.push(format!(
            "the watcher did not catch up (at {}, last committed {:?})",
            seen.last,
            committed.last()
        ));
    }
    let missed: Vec<&u64> = committed.difference(&seen.positions).collect();
    if !missed.is_empty() {
        bad.push(format!(
            "{} events never delivered, e.g. {:?}",
            missed.len(),
            &missed[..missed.len().min(5)]
        ));
    }
    // Events committed after the trail was read are not in `committed`.
    let upto = committed.last().copied().unwrap_or(0);
    let phantom: Vec<&u64> = seen
        .positions
        .range(..=upto)
        .filter(|p| !committed.contains(p))
        .collect();
    if !phantom.is_empty() {
        bad.push(format!(
            "{} delivered events not in the store, e.g. {:?}",
            phantom.len(),
            &phantom[..phantom.len().min(5)]
        ));
    }
    if !seen.repeats.is_empty() {
        bad.push(format!(
            "repeated positions {:?}",
            &seen.repeats[..seen.repeats.len().min(5)]
        ));
    }
    if !seen.out_of_order.is_empty() {
        bad.push(format!(
            "out-of-order positions {:?}",
            &seen.out_of_order[..seen.out_of_order.len().min(5)]
        ));
    }
    Verdict {
        name: "a watcher saw every event once, in order",
        held: bad.is_empty(),
        detail: if bad.is_empty() {
            format!("{} events, {} resumes", seen.positions.len(), seen.resumes)
        } else {
            bad.join("; ")
        },
    }
}
