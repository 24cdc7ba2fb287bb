//! `scripts/simulate`: runs the deterministic simulation of the
//! supervision core over many seeds (or replays one), prints failures with
//! their shortest reproducing plan, and the coverage reached.
//!
//!   simulate --seeds 10000            # seeds 0..10000
//!   simulate --seed 42                # one seed, its trace
//!   simulate --seed 42 --keep 0,3,9   # a shrunk plan, as a failure prints it
//!   simulate --bug stale-ping-cancels-fence --seeds 500

use std::process::ExitCode;

use clap::Parser;
use ipa_sim::{Bugs, SimConfig, check_seed, run_batch, run_seed};

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of the IPA supervision core")]
struct Args {
    /// How many seeds to run (from --first).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run this one seed and print its trace.
    #[arg(long)]
    seed: Option<u64>,
    /// With --seed: run only these steps of its plan (a shrunk plan).
    #[arg(long, value_delimiter = ',')]
    keep: Option<Vec<usize>>,
    /// Switch a past bug back on (to see the simulator find it).
    #[arg(long)]
    bug: Option<String>,
    /// Threads (each run is single-threaded).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Runs a failing seed may spend on shrinking.
    #[arg(long, default_value_t = 300)]
    shrink_budget: usize,
    /// Let writes commit and still fail for their caller (a reply lost
    /// after the commit).
    #[arg(long)]
    lost_replies: bool,
    /// Longer, busier plans (see `Knobs::busy`).
    #[arg(long)]
    busy: bool,
    /// Plans without schedule operations (to compare costs).
    #[arg(long)]
    no_schedules: bool,
    /// Stop after this many failing seeds.
    #[arg(long, default_value_t = 3)]
    max_failures: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os("SIM_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SIM_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
    let mut config = SimConfig::default();
    if args.busy {
        config.knobs = ipa_sim::config::Knobs::busy();
    }
    config.knobs.lost_replies = args.lost_replies;
    config.knobs.schedules = !args.no_schedules;
    if let Some(name) = &args.bug {
        match Bugs::named(name) {
            Some(b) => config.bugs = b,
            None => {
                eprintln!("unknown bug {name:?}; known: {}", Bugs::NAMES.join(", "));
                return ExitCode::from(2);
            }
        }
    }
    if let Some(seed) = args.seed {
        let (plan, outcome) = run_seed(seed, &config, args.keep.as_deref());
        println!(
            "seed {seed}: {} steps, {} hosts",
            plan.steps.len(),
            plan.hosts.len()
        );
        for l in &outcome.trace {
            println!("  {l}");
        }
        print!("{}", outcome.coverage);
        if outcome.violations.is_empty() {
            println!(
                "seed {seed} passed ({:.1} s virtual)",
                outcome.virtual_time.as_secs_f64()
            );
            return ExitCode::SUCCESS;
        }
        if args.keep.is_none() {
            if let Err(f) = check_seed(seed, &config, args.shrink_budget) {
                println!("{}", f.report());
            }
        } else {
            for v in &outcome.violations {
                println!("VIOLATION: {v}");
            }
        }
        return ExitCode::FAILURE;
    }
    let b = run_batch(
        args.first,
        args.seeds,
        args.threads,
        &config,
        args.shrink_budget,
        args.max_failures,
    );
    for f in &b.failures {
        println!("{}", f.report());
    }
    print!("{}", b.coverage);
    println!(
        "{} seeds, {} failed, {:.0} s virtual in {:.1} s",
        b.seeds,
        b.failures.len(),
        b.virtual_time.as_secs_f64(),
        b.wall_time.as_secs_f64()
    );
    if b.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
