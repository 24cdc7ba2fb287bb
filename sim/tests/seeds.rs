//! The simulator in the normal test suite (issue 17 items 2-5): 1,000
//! seeds of the real core under random operations and faults must hold
//! every invariant; a seed replays exactly; and each past bug switched
//! back on is found within the same number of seeds (a seed that fails
//! with the bug and passes without it), shrunk to a short plan that does
//! the same.
//!
//! The 1,000 seeds are four tests of 250 so the test runner spreads them
//! over the machine's cores; each run is single-threaded and independent.

use ipa_sim::config::Knobs;
use ipa_sim::shrink::shrink;
use ipa_sim::{Batch, Bugs, Failure, SimConfig, run_batch, run_seed, world};

/// Seeds of the normal suite (`scripts/simulate --seeds N` runs more).
const SEEDS: u64 = 1000;
const SLICES: u64 = 4;
/// Runs a failing seed may spend on shrinking in a test.
const SHRINK_BUDGET: usize = 60;

/// Open findings: seeds of the normal budget that still fail, with what
/// they violate, until the core (or the simulator's model) is fixed. Each
/// is pinned both ways: the slices tolerate exactly this violation on
/// exactly this seed, and `open_findings_still_fail` fails once one
/// passes, so a fix must remove it from this list (and add it to
/// [`FIXED_FINDINGS`]).
const OPEN_FINDINGS: &[(u64, &str)] = &[
    // Found once the simulated clients began creating tasks with
    // depends_on (the workload of seed 747 changed), but not about
    // dependencies: its shortest plan (`--keep 4,19,20,23`: a schedule
    // every 1 s, a store outage of 2.8 s, then a store stall of 2.4 s
    // inside it, and a StopPod) has no dependent task and fails the same
    // way without the dependency code. After the faults heal, the
    // schedule's catch-up fires come about 3 s late, so a fire is judged
    // overdue. Left to whoever owns the schedule firing loop.
    (747, "schedule: fire of"),
];

/// Findings fixed since, by the seeds that found them: each must now hold
/// every invariant (they are also among the 1,000, but are named here so
/// the fix keeps a test of its own).
const FIXED_FINDINGS: &[(u64, &str)] = &[
    // A start held up by a slow network (not a partition): central's call
    // failed, the fencing StopPod it sent for the unrecorded start failed
    // too, so the task was UNKNOWN; the host later refused the late start
    // (LEASE_EXPIRED) but that answer went to the abandoned call, and the
    // host never disconnected, so no hello came to settle the claim.
    // Fixed: central asks a connected host again (ListPods, with backoff)
    // about rows it holds as UNKNOWN or STARTING there
    // (core/supervisor/unsettled.rs, requery.rs).
    (65, "task left UNKNOWN on a host that stays connected"),
    (169, "task left UNKNOWN on a host that stays connected"),
    // Found by the restart-policy check (sim/src/world/restarts.rs): a
    // restart timer left over from an earlier crash (a user's start had
    // overtaken that restart, then failed itself) started the task 32 ms
    // after the new failure, whose backoff asked for 256 ms or more.
    // Fixed: an automatic restart's claim is refused until the row's
    // restart is due (store/pods.rs, claim).
    (741, "automatic restart earlier than its backoff"),
    // Found by the schedule checks (sim/src/world/schedules.rs): a
    // BUFFER_ONE fire left waiting after its previous task ended (a store
    // stall held up the buffered start) was overtaken by the next
    // timetable fire and counted in skipped_count without a
    // schedule_skipped event. Fixed: the superseded fire time is recorded
    // (reason `superseded`, store/schedules/mod.rs).
    (67, "skipped_count"),
];

fn open_finding(f: &ipa_sim::Failure) -> bool {
    OPEN_FINDINGS
        .iter()
        .any(|(seed, what)| *seed == f.seed && f.violations.iter().all(|v| v.contains(what)))
}

fn slice(n: u64) -> Batch {
    let per = SEEDS / SLICES;
    let b = run_batch(n * per, per, 1, &SimConfig::default(), SHRINK_BUDGET, 10);
    for f in &b.failures {
        eprintln!("{}", f.report());
    }
    b
}

fn assert_clean(n: u64) {
    let b = slice(n);
    if let Some(f) = b.failures.iter().find(|f| !open_finding(f)) {
        panic!(
            "seed {} violated an invariant (report above; replay with scripts/simulate --seed {})",
            f.seed, f.seed
        );
    }
    assert_eq!(b.seeds, SEEDS / SLICES);
    eprint!("{}", b.coverage);
    eprintln!(
        "{} seeds, {:.0} s virtual in {:.1} s",
        b.seeds,
        b.virtual_time.as_secs_f64(),
        b.wall_time.as_secs_f64()
    );
    // The runs did exercise the system: starts, exits, restarts.
    for kind in [
        "pod_started",
        "pod_exited",
        "restart_scheduled",
        "schedule_fired",
        "schedule_skipped/overlap",
        "schedule_buffered",
    ] {
        assert!(b.coverage.events.contains(kind), "no {kind} in 250 runs");
    }
}

#[test]
fn seeds_0_to_249_hold_every_invariant() {
    assert_clean(0);
}

#[test]
fn seeds_250_to_499_hold_every_invariant() {
    assert_clean(1);
}

#[test]
fn seeds_500_to_749_hold_every_invariant() {
    assert_clean(2);
}

#[test]
fn seeds_750_to_999_hold_every_invariant() {
    assert_clean(3);
}

#[test]
fn open_findings_still_fail() {
    for (seed, what) in OPEN_FINDINGS {
        let (_, o) = run_seed(*seed, &SimConfig::default(), None);
        assert!(
            o.violations.iter().any(|v| v.contains(what)),
            "seed {seed} no longer violates {what:?}: remove it from OPEN_FINDINGS"
        );
    }
}

#[test]
fn fixed_findings_hold() {
    for (seed, what) in FIXED_FINDINGS {
        let (_, o) = run_seed(*seed, &SimConfig::default(), None);
        assert!(
            o.violations.is_empty(),
            "seed {seed} ({what}) fails again: {:?}",
            o.violations
        );
    }
}

/// Findings fixed since with `Knobs::lost_replies` (a write that commits
/// and still fails for its caller; `scripts/simulate --lost-replies`).
const FIXED_WITH_LOST_REPLIES: &[(u64, &str)] = &[
    // A StartPod's claim committed with its reply lost: the row stayed
    // STARTING on a connected host with no start on its way. Fixed: the
    // host is asked again (as for seeds 65 and 169).
    (6217, "task left STARTING with no start in flight"),
    (6333, "task left STARTING with no start in flight"),
    // A crash's write committed with its reply lost: applied again, it
    // changed nothing, and its restart never reached the supervisor's
    // timer. Fixed: after writes applied again, the scheduled restarts
    // are read back (host_events, reschedule_restarts).
    (6658, "automatic restart overdue"),
    // A task's terminal write (a CancelTask in 20829, a deadline's
    // task_failed in 20083) committed with its reply lost: the caller was
    // told EVENT_STORE_UNAVAILABLE, so nobody stopped the pod (a retried
    // cancel is ALREADY_CANCELLED; a terminal task's deadline is no longer
    // due), and the host stayed connected, so no hello fenced it. Fixed:
    // such a failed write marks the hosts to be asked again, and the
    // requery fences the pods no row places on the host
    // (Pods::after_ambiguous_write, supervisor/requery.rs).
    (20083, "but its pod"),
    (20829, "but its pod"),
    // A schedule's create committed with its reply lost: the firing loop
    // was woken only on success, so it never looked at the new schedule
    // and its fires were overdue for good. Fixed: every schedule write
    // wakes the loop, whatever its answer (core/schedules.rs, write).
    (40035, "overdue"),
    (40480, "overdue"),
];

#[test]
fn fixed_findings_with_lost_replies_hold() {
    let config = lost_replies();
    for (seed, what) in FIXED_WITH_LOST_REPLIES {
        let (_, o) = run_seed(*seed, &config, None);
        assert!(
            o.violations.is_empty(),
            "seed {seed} ({what}) fails again: {:?}",
            o.violations
        );
    }
}

/// Open findings of `--lost-replies` (a mode outside the 1,000 seeds: a
/// write that commits while its caller is told it failed, as a lost
/// COMMIT reply would on a networked database). Pinned so a fix must
/// unpin them: `open_findings_with_lost_replies_still_fail` fails once one
/// passes.
const OPEN_WITH_LOST_REPLIES: &[(u64, &str)] = &[];

fn lost_replies() -> SimConfig {
    SimConfig {
        knobs: Knobs {
            lost_replies: true,
            ..Knobs::default()
        },
        ..SimConfig::default()
    }
}

#[test]
fn open_findings_with_lost_replies_still_fail() {
    let config = lost_replies();
    for (seed, what) in OPEN_WITH_LOST_REPLIES {
        let (_, o) = run_seed(*seed, &config, None);
        assert!(
            o.violations.iter().any(|v| v.contains(what)),
            "seed {seed} no longer violates {what:?}: move it to FIXED_WITH_LOST_REPLIES"
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::default();
    // Seed 67's plan has schedules (their firing loop and ids replay too).
    for seed in [7, 67, 1234] {
        let (plan_a, a) = run_seed(seed, &config, None);
        let (plan_b, b) = run_seed(seed, &config, None);
        assert_eq!(plan_a.steps.len(), plan_b.steps.len());
        assert!(!a.trace.is_empty());
        assert_eq!(a.trace, b.trace, "seed {seed} ran differently twice");
        assert_eq!(a.coverage, b.coverage);
        assert_eq!(a.virtual_time, b.virtual_time);
    }
}

/// Runs the normal budget with `bug` switched back on; it must fail, and
/// the failure must come shrunk, with its seed, and replay.
fn finds(bug: &str, knobs: Knobs) {
    finds_beside(bug, Bugs::default(), knobs);
}

/// [`finds`] on a host that has `base` switched on too, with and without
/// the bug: for a bug that a later defence also covers.
fn finds_beside(bug: &str, base: Bugs, knobs: Knobs) {
    let mut bugs = Bugs::named(bug).expect("a known bug");
    bugs.host.no_backstop |= base.host.no_backstop;
    let config = SimConfig {
        bugs,
        knobs: knobs.clone(),
        ..SimConfig::default()
    };
    let without = SimConfig {
        bugs: base,
        knobs,
        ..SimConfig::default()
    };
    // The first seed that fails with the bug and passes without it.
    let found = (0..SEEDS).find_map(|seed| {
        let (plan, with_bug) = run_seed(seed, &config, None);
        (!with_bug.violations.is_empty() && run_seed(seed, &without, None).1.violations.is_empty())
            .then_some((seed, plan, with_bug))
    });
    let Some((seed, plan, with_bug)) = found else {
        panic!("{bug}: no seed of {SEEDS} fails because of it");
    };
    // Shrunk to the shortest plan that still fails with the bug and passes
    // without it: the bug is what fails.
    let shrunk = shrink(&plan, SHRINK_BUDGET, |p| {
        !world::run(p, &config).violations.is_empty()
            && world::run(p, &without).violations.is_empty()
    });
    let shrunk_outcome = world::run(&shrunk.plan, &config);
    let f = Failure {
        seed,
        violations: with_bug.violations,
        steps: plan.steps.len(),
        shrunk: shrunk.plan,
        kept: shrunk.kept,
        shrunk_outcome,
        shrink_runs: shrunk.runs,
    };
    let report = f.report();
    eprintln!("{bug}: found at seed {seed}\n{report}");
    assert!(report.contains(&format!("seed {seed} FAILED")));
    assert!(
        !f.shrunk_outcome.violations.is_empty(),
        "the shrunk plan fails"
    );
    assert!(f.kept.len() <= f.steps, "shrinking never grows a plan");
    // The printed replay (the seed and the kept steps) fails again, and
    // passes without the bug.
    let (_, replay) = run_seed(seed, &config, Some(&f.kept));
    assert_eq!(replay.violations, f.shrunk_outcome.violations);
    let (_, fixed) = run_seed(seed, &without, Some(&f.kept));
    assert!(fixed.violations.is_empty(), "{bug}: {:?}", fixed.violations);
}

#[test]
fn finds_placement_ignoring_starts_in_flight() {
    // Busier plans: the bug needs a host's hello to be reconciled while a
    // start to it is in flight. Run on plans without schedules, as when
    // the hunt was written (found at seed 256): seed 256's busy plan has
    // schedules now, their fired tasks change what its hosts run, and no
    // other of the 1,000 busy seeds hits the window with schedules on.
    // The other hunts find their bugs with schedules on.
    finds(
        "placement-ignores-starts-in-flight",
        Knobs {
            schedules: false,
            ..Knobs::busy()
        },
    );
}

#[test]
fn finds_a_dispatcher_that_misses_room() {
    // A dispatcher woken only by queue changes leaves queued tasks waiting
    // after a pod ends (first found at seed 26): the queue's progress
    // invariant.
    finds("dispatcher-misses-room", Knobs::default());
}

#[test]
fn finds_a_stale_ping_cancelling_a_fence() {
    // The reaper's backstop now kills a frozen host's pods before it wakes,
    // which hides this bug; it is looked for on a host without it (the
    // host of its time), and must fail there only because of the bug.
    let base = Bugs::named("host-without-backstop").expect("a known bug");
    finds_beside("stale-ping-cancels-fence", base, Knobs::default());
}

#[test]
fn finds_a_host_without_the_fence_backstop() {
    finds("host-without-backstop", Knobs::default());
}

#[test]
fn finds_a_host_that_ignores_its_lease() {
    finds("host-ignores-lease", Knobs::default());
}
